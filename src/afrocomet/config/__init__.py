"""Typed configuration: the fields (config/schema.py) and YAML in and out (config/yaml_io.py).

The resolved config is saved beside every output (`config.yaml`). Import from here.
"""

from afrocomet.config.schema import (  # noqa: F401
    ADAPTIVE_MODES, DEVICE_PATTERN, DISTILL_KINDS, FLOAT_TEXT, LIMITS, MATCHING_MODES, MIN_VOCAB_SIZE, MLM_KINDS,
    NORMALIZE_MODES, SEED_MAX, STAGE_KINDS, STUDENT_INITS, TEACHER_KINDS, DataConfig, ModelConfig, RunConfig,
    StageConfig, check_values, validate, validate_stage)
from afrocomet.config.yaml_io import RENAMED, from_dict, load_config, save_config, to_dict, to_yaml  # noqa: F401
