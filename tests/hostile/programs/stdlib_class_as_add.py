# Binds the task's name to stdlib classes, so that the tests "construct" a trusted stdlib object.
# expect: fail,error
import fractions, collections
add = fractions.Fraction
