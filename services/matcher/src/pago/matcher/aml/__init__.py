"""AML screening of a transfer's sender: a local sanctions list, then a risk provider."""
