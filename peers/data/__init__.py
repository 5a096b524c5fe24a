"""A bank's own data: reading it, splitting it, encoding it into model inputs."""
