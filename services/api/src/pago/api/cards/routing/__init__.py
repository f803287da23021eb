"""Routing: the pure scorer, its inputs and the explainable decision."""
