"""The institution: local DP training (ClientApp), the job host (ServerApp), the peer daemon."""
