"""riverline: continual learning on Kafka streams with River."""

__version__ = "0.1.0"
