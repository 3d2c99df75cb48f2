"""TransformerLens hook functions (installed as ``unpact.hooks``).

Each hook or factory here is documented with the hook names it attaches to.
"""
