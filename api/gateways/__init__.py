"""Gateways as their retained status last described them."""
