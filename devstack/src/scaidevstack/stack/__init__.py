"""``python -m scaidevstack stack up|down``: the whole local stack behind ``make run``."""
