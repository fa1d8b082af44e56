"""Who is this face: the gallery and per-track vote (``gallery``), the facebank on disk
(``facebank``), enrolment of photos (``enrol``) and a gallery that follows the facebank (``live``)."""
