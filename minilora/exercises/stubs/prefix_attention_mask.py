"""Exercise: the attention mask of prefix tuning (Li & Liang 2021)."""


def prefix_attention_mask(T, P):
    """Which keys each query may attend to when P prefix key/value slots come before T tokens.

    Arguments:
      T  int >= 1  number of real tokens (queries)
      P  int >= 0  number of prefix slots (trainable keys and values, no queries)
    Result: bool array of shape (T, P + T); entry [i, j] is True if query i may attend to key j.
      Keys are ordered [prefix slots 0..P-1 ; tokens 0..T-1], so key j >= P is token j - P.

    Rules: every token sees every prefix slot (the prefix comes before the whole sequence), and
    token i sees token t only if t <= i (causal). With P = 0 this is the plain causal mask.

    Hints:
      1. Build it in two blocks side by side: (T, P) and (T, T).
      2. A single np.tril over the (T, P + T) shape needs its diagonal shifted by P.
    """
    raise NotImplementedError("prefix_attention_mask: fill me in")
