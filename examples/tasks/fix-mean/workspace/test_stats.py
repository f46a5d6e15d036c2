from stats import mean, spread

assert spread([1, 5, 3]) == 4
assert mean([2, 4]) == 3, f"mean([2, 4]) should be 3, got {mean([2, 4])}"
print("visible tests passed")
