"""Inference for applications: load a trained model, predict on new audio, flag ambiguity, export.

- ``loading``: ``load`` (also ``ambemo.load``) from an export folder, a run folder or ``latest:<experiment>``;
- ``predictor``: ``Predictor.predict`` and ``ambemo predict``;
- ``ambiguity``: the ``ambiguous`` flag's threshold, chosen on the validation split;
- ``export``: ``ambemo export`` (adapter or full weights, processor, threshold, model card);
- ``device``: batches to the device and the run's autocast, for read-outs outside the Trainer.
"""
