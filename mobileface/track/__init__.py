"""Following faces over frames: SORT (``sort``), scene cuts (``scene_cut``) and what is
remembered of each track (``memory``)."""
