"""Card checkout orchestration (seed 003): ``POST /api/v1/sessions`` routed to the best card
provider by an explainable score; the provider's hosted checkout out."""
