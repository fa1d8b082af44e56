"""The site service: many cameras over the machines of a Ray cluster (``mobileface serve``).

:mod:`.config` reads and checks ``cameras.toml``; :mod:`.camera` runs one
camera's pipeline (decode, detect, track, per-face stages, identity) with its
outputs; :mod:`.site` starts or joins Ray, places one actor per camera, watches
them and reports their status.
"""
