"""FER2013's label set, in the canonical order of the data set's `emotion` column."""

CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
N_CLASSES = len(CLASSES)
IMAGE_SIZE = 48  # pixels per side; FER2013 images are 48x48 grayscale
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE

# The `Usage` column, coded as small ints so a whole source fits in one int8 array.
USAGE_CODES = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
USAGE_NONE = -1  # the source has no Usage column (train.csv, folders without name prefixes)
USAGE_TEST = 3  # an image-folder `test/` without PublicTest_/PrivateTest_ name prefixes

# Folder names seen in the wild (Kaggle image-folder copies of FER2013), lower-cased.
FOLDER_ALIASES = {
    "angry": 0, "anger": 0,
    "disgust": 1, "disgusted": 1,
    "fear": 2, "fearful": 2,
    "happy": 3, "happiness": 3,
    "sad": 4, "sadness": 4,
    "surprise": 5, "surprised": 5,
    "neutral": 6,
}
