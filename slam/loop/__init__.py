"""Place recognition for loop closing and relocalisation: a bag-of-words vocabulary we train
ourselves (:mod:`slam.loop.vocabulary`), a keyframe database with an inverted index
(:mod:`slam.loop.database`), where vocabularies live (:mod:`slam.loop.store`) and the
``python -m slam vocab`` tool (:mod:`slam.loop.train_vocab`). Light: importing it loads no torch."""
