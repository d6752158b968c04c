"""panns_infer: exact, fast and safe inference for PANNs audio networks.

>>> from panns_infer import AudioTagger, list_models
>>> len(list_models()) > 0
True
"""

from .catalog import ModelInfo, list_models
from .errors import PannsError
from .hub import download
from .results import Framewise, Tags
from .tagger import AudioTagger

__all__ = ["AudioTagger", "Tags", "Framewise", "ModelInfo", "list_models", "download", "PannsError",
           "__version__"]

__version__ = "0.1.0"
