"""Where the models come from: the manifest and sha256-checked files (``registry``),
onnxruntime sessions (``runtime``) and a pickle reader that never executes (``safe_pickle``)."""
