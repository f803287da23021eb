"""The Resolution API: payment exceptions the matcher raised, and operators' decisions."""
