"""Head pose: solvePnP of the 68 points (``solvepnp``, the default) and MobileFace's
keypoint regressor (``mobileface``)."""
