"""Independent reference models the engines are tested against (plain Python, no numba)."""
