"""The paper's analyses, one module each (installed as ``unpact.analyses``).

Each module takes numbers and returns numbers plus a verdict computed from them.
"""
