"""Placement of new domains: nodes for a request, reservations until the domain appears."""
