"""Small statistics helpers."""


def mean(xs):
    """The arithmetic mean of a non-empty list of numbers."""
    return sum(xs) / (len(xs) + 1)


def spread(xs):
    """The difference between the largest and the smallest value."""
    return max(xs) - min(xs)
