"""The institution's side of a training job: a Flower ClientApp doing local DP-SGD."""
