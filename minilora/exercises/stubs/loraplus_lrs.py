"""Exercise: LoRA+'s learning rate of each trainable parameter."""


def loraplus_lrs(names, ndims, lr, loraplus_lr_ratio):
    """The learning rate LoRA+ (arXiv:2402.12354; PEFT's create_loraplus_optimizer) gives each parameter.

    Arguments:
      names              tuple of str, parameter names such as
                         "transformer.h.0.attn.c_attn.lora_A.weight"
      ndims              tuple of int, the number of dimensions of each parameter (same length)
      lr                 float > 0, the learning rate of A
      loraplus_lr_ratio  float > 0, lambda (the paper's default: 16)
    Result: float64 array (len(names),): lambda * lr for every lora_B matrix AND every 1-D parameter
      (DoRA's lora_magnitude_vector, trained biases: PEFT puts them with B), lr for the rest.

    Hints:
      1. A 1-D parameter goes with B even when its name says nothing about B.
      2. The ratio multiplies B's learning rate; A keeps lr.
    """
    raise NotImplementedError("loraplus_lrs: fill me in")
