"""The Evo2 feature resource: one configuration, three backends (markov on CPU, evo2 on a GPU, nim over
HTTP), and the feature cache they share."""

from resources.evo2.resource import Evo2Resource

__all__ = ["Evo2Resource"]
