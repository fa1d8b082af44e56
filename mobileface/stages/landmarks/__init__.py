"""68-point landmarks: dlib's model run by our batched numpy predictor (``dlib68``, ``ert``),
and any dlib shape-predictor file (``shape_predictor``)."""
