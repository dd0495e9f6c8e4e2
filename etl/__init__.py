"""Plain, typed, Prefect-free functions that do the work; flows/ only wires them."""
