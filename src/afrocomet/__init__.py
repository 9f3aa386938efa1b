"""afrocomet: hybrid knowledge distillation of multilingual models for African languages.

Implements and extends AfroXLMR-Comet (arXiv 2502.18020): a large teacher (AfroXLMR-Large)
is distilled into a small student with temperature-scaled logit distillation, attention
matching and hard labels, first task-agnostic (masked LM), then on AfriSenti sentiment.
"""

from afrocomet.errors import AfroCometError

__version__ = "0.1.0"
__all__ = ["AfroCometError", "__version__"]
