"""A tiny Llama (byte-level BPE tokenizer + ~5M parameters) built locally for tests, no download."""

from __future__ import annotations

import random
from pathlib import Path

EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [EOS_TOKEN]
VOCAB_SIZE = 3000

# ChatML-like template, in the style of SmolLM2's: lets tests exercise the chat-template path.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>"]

_WORDS = """
the a an our your their this that every each some many few customer client shop store order
invoice receipt parcel package delivery shipping return refund exchange payment card bank
account password email address phone number form policy warranty guarantee discount code
price cost total tax fee product item jacket shirt coat dress trousers skirt sleeve collar
button pocket fabric cotton wool linen silk leather size small medium large colour blue red
green black white grey brown yellow team agent manager owner tailor designer warehouse office
counter morning evening afternoon night day week month year monday tuesday wednesday thursday
friday saturday sunday today tomorrow yesterday soon later early late quickly slowly carefully
kindly please thank thanks sorry hello goodbye yes no maybe always never often sometimes
arrive arrives arrived need needs needed ship ships shipped explain explains explained open
opens opened close closes closed help helps helped check checks checked update updates
updated send sends sent receive receives received repair repairs repaired measure measures
measured change changes changed answer answers answered ask asks asked buy buys bought sell
sells sold pay pays paid wait waits waited find finds found keep keeps kept make makes made
take takes took give gives gave come comes came go goes went is are was were be been have has
had do does did can could will would should must may might new old good bad great fine happy
clear simple fast free long short wide narrow soft warm cool bright dark first last next
second third other same different important possible available ready sure because although
while when where which who what why how and or but if then so with without within before
after during under over between about against into onto from to of in on at by for as
question problem issue reason answer reply message letter note list step rule guide manual
""".split()


def _pseudo_word(rng: random.Random) -> str:
    syllables = ["ka", "lo", "mir", "ten", "sa", "vel", "dor", "pa", "ri", "zun", "eth", "gal"]
    return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))


def generate_corpus(n_sentences: int = 6000, seed: int = 0) -> list[str]:
    """A few hundred KB of English-ish support text with names and numbers, by seed."""
    rng = random.Random(seed)
    names = [_pseudo_word(rng).capitalize() for _ in range(300)]
    lines = []
    for _ in range(n_sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 14))]
        if rng.random() < 0.4:
            words.insert(rng.randrange(len(words)), rng.choice(names))
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 9999)))
        sentence = " ".join(words)
        lines.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "?", "!", ".", "."]))
    return lines


def build_tokenizer(chat: bool = False):
    """Train a byte-level BPE tokenizer and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS + (CHAT_SPECIAL_TOKENS if chat else [])
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    backend.train_from_iterator(generate_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token="<|im_end|>" if chat else EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=None,
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(out_dir: Path, chat: bool = False, seed: int = 0) -> Path:
    """Save a tiny randomly initialised Llama and its tokenizer into out_dir; returns out_dir.

    Without `chat` the tokenizer has no chat template (the plain prompt format is used);
    with it, a ChatML template and <|im_end|> as EOS, like SmolLM2.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(chat=chat)
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=False,
        # With the default 0.02 the frozen random output head caps any logit near 5, so on a
        # 3000-token vocabulary LoRA can never push the loss below ~3 nats; 0.1 lets it memorise.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_wordpiece_tokenizer():
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP]) trained on the same corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials, show_progress=False)
    backend.train_from_iterator(generate_corpus(3000), trainer=trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )


def build_tiny_bert(out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny randomly initialised BERT encoder (MiniLM's architecture, ~1M parameters) and
    its WordPiece tokenizer into out_dir, as a masked-LM checkpoint like the real MiniLM folder."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_wordpiece_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.1,  # as for the tiny Llama: distinct inputs get distinct features to learn from
    )
    torch.manual_seed(seed)
    BertForMaskedLM(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
