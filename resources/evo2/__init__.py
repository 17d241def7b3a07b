"""The Evo2 feature resource (``resources.evo2.resource``): one configuration, three backends (markov on CPU,
evo2 on a GPU, nim over HTTP), and the feature cache they share. Nothing is imported here, so
``resources.evo2.torch_backend`` loads without Dagster."""
