"""minilora.sampling: text from a model (generate_text) and terminal-safe printing (printable)."""
from hypothesis import given
from hypothesis import strategies as st

from minilora import GPT, GPTConfig
from minilora.data import ByteTokenizer
from minilora.sampling import generate_text, printable

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0, bias=True)


def test_generate_text_keeps_the_prompt_and_is_seeded():
    model = GPT(CFG, seed=0).eval()
    a = generate_text(model, "The ", 12, temperature=1.0, seed=3)
    assert a == generate_text(model, "The ", 12, temperature=1.0, seed=3)
    assert a.startswith("The ") and a == printable(a)
    # the same bytes as GPT.generate, decoded and made printable
    ids = model.generate(ByteTokenizer().encode("The ")[None, :], 12, temperature=1.0, seed=3)
    assert a == printable(ByteTokenizer().decode(ids[0]))
    assert generate_text(model, "", 0) == "\n"                      # "" is read as a newline
    long = generate_text(model, "x" * 20, 3, temperature=0.0)      # longer than block_size: cropped by generate
    assert long.startswith("x" * 20) and len(long) <= 23


@given(st.text())
def test_printable_maps_every_control_character_and_keeps_length(text):
    out = printable(text)
    assert len(out) == len(text)
    assert all(c.isprintable() or c in "\n\t" for c in out)
    assert printable("a\x1b[2Jb\tc\n") == "a\ufffd[2Jb\tc\n"
    assert all(o == t for o, t in zip(out, text, strict=True) if t.isprintable() or t in "\n\t")
