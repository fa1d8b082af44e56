"""Frames in and out: images (``image``), video files, cameras and streams (``video``), and
whether a screen is there to show them (``display``)."""
