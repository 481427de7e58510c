"""Exercise: gradients of a broadcasting addition (the `unbroadcast` step every autograd engine needs)."""


def broadcast_add_backward(g, shape_a, shape_b):
    """Gradients of c = a + b, where a and b broadcast together, given g = dL/dc.

    Arguments:
      g        float64 array of shape np.broadcast_shapes(shape_a, shape_b)
      shape_a  tuple of ints, the shape of a (may be () or have fewer dims than g)
      shape_b  tuple of ints, the shape of b
    Result: (da, db), float64 arrays of shapes exactly shape_a and shape_b.

    Formula: dc/da is the identity, so da is g summed over every axis along which a was broadcast:
      1. sum g over its leading axes that a does not have (len(g.shape) - len(shape_a) of them);
      2. then sum, with keepdims=True, over each axis where shape_a has size 1 but g does not.
    Same for db.

    Hints:
      1. Example: shape_a = (3, 1), shape_b = (4,), g (3, 4) -> da = g.sum(axis=1, keepdims=True),
         db = g.sum(axis=0).
      2. A 0-d a (shape ()) gets the sum of all of g.
      3. End with .reshape(shape) to be sure of the shape.
    """
    raise NotImplementedError("broadcast_add_backward: fill me in")
