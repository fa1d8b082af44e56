"""Where results go: overlays drawn on frames (``annotators``) and the sinks a runner
feeds (``sinks``: annotated video, events file)."""
