"""Architectures for the coverage matrix (benchmarks/coverage.py): each built from a ``transformers`` config with
random weights and small sizes — never downloaded.

Each builder returns a :class:`mobilize.ModelSpec`: the model wrapped so it returns a tuple of tensors (what a user
exporting for an app writes), example inputs, input names and, for token ids, their value range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SEED = 0
IMAGE = 64  # pixels (square)
TOKENS = 16
AUDIO = 4000  # samples (a quarter second at 16 kHz)
VOCAB = 128


class _Tensors:
    """Wraps a transformers model: positional tensors in, its output's tensors out (a tuple, ``None`` dropped)."""

    def __new__(cls, model: Any, keys: tuple[str, ...] | None = None) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> Any:
                out = self.model(*args)
                if keys is not None:
                    return tuple(out[k] for k in keys)
                if isinstance(out, torch.Tensor):
                    return (out,)
                return tuple(v for v in out.to_tuple() if isinstance(v, torch.Tensor))

        return Wrapped().eval()


def _seeded() -> None:
    import torch

    torch.manual_seed(SEED)


def _image(channels: int = 3, size: int = IMAGE) -> Any:
    import torch

    return torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(1))


def _spec(name: str, model: Any, inputs: tuple[Any, ...], names: list[str], keys: tuple[str, ...] | None = None,
          ranges: dict[str, tuple[float, float]] | None = None) -> Any:
    import torch

    from mobilize import ModelSpec

    # some models zero-initialise layers (classifier heads, layer-scale, out projections): a little noise on every
    # parameter keeps every output alive, so parity has something to check
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)

    return ModelSpec(module=_Tensors(model.eval(), keys), example_inputs=inputs, input_names=names, name=name,
                     input_ranges=ranges)


def _vision(name: str, config_cls: str, model_cls: str, keys: tuple[str, ...] | None = None, size: int = IMAGE,
            **cfg: Any) -> Callable[[], Any]:
    def build() -> Any:
        import transformers as tf

        _seeded()
        config = getattr(tf, config_cls)(**cfg)
        model = getattr(tf, model_cls)(config)
        return _spec(name, model, (_image(cfg.get("num_channels", 3), size),), ["pixel_values"], keys)

    return build


def _text(name: str, config_cls: str, model_cls: str, mask: bool = True, keys: tuple[str, ...] | None = None,
          **cfg: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch
        import transformers as tf

        _seeded()
        config = getattr(tf, config_cls)(vocab_size=VOCAB, **cfg)
        model = getattr(tf, model_cls)(config)
        ids = torch.randint(0, VOCAB, (1, TOKENS), generator=torch.Generator().manual_seed(1))
        inputs: tuple[Any, ...] = (ids,)
        names = ["input_ids"]
        if mask:
            m = torch.ones(1, TOKENS, dtype=torch.int64)
            m[:, -3:] = 0  # padding at the end, as a batch of unequal sentences has
            inputs += (m,)
            names.append("attention_mask")
        return _spec(name, model, inputs, names, keys, ranges={"input_ids": (0, VOCAB - 1),
                                                               "attention_mask": (1, 1)})

    return build


def _audio(name: str, config_cls: str, model_cls: str, **cfg: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch
        import transformers as tf

        _seeded()
        config = getattr(tf, config_cls)(**cfg)
        model = getattr(tf, model_cls)(config)
        wave = torch.randn(1, AUDIO, generator=torch.Generator().manual_seed(1))
        return _spec(name, model, (wave,), ["input_values"], ("last_hidden_state",))

    return build


_BERTISH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=64)
_VIT = dict(image_size=IMAGE, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64)
_W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer")
_SWIN = dict(image_size=IMAGE, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)


def _whisper() -> Any:
    import torch
    import transformers as tf

    _seeded()
    config = tf.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                              decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=16,
                              max_source_positions=50, vocab_size=VOCAB, pad_token_id=0, bos_token_id=1,
                              eos_token_id=2, decoder_start_token_id=1)
    encoder = tf.WhisperModel(config).get_encoder()
    mel = torch.randn(1, 16, 100, generator=torch.Generator().manual_seed(1))
    return _spec("whisper_encoder", encoder, (mel,), ["input_features"], ("last_hidden_state",))


def _ast() -> Any:
    import torch
    import transformers as tf

    _seeded()
    config = tf.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          num_mel_bins=32, max_length=64, patch_size=16, frequency_stride=10, time_stride=10)
    model = tf.ASTForAudioClassification(config)
    mel = torch.randn(1, 64, 32, generator=torch.Generator().manual_seed(1))
    return _spec("ast", model, (mel,), ["input_values"], ("logits",))


def _clip_text() -> Any:
    return _text("clip_text", "CLIPTextConfig", "CLIPTextModel", mask=True, keys=("last_hidden_state",),
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=TOKENS, projection_dim=32, bos_token_id=1, eos_token_id=2,
                 pad_token_id=0)()


def _siglip_text() -> Any:
    return _text("siglip_text", "SiglipTextConfig", "SiglipTextModel", mask=False, keys=("pooler_output",),
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=TOKENS)()


def _upernet() -> Any:
    import transformers as tf

    _seeded()
    backbone = tf.ConvNextConfig(num_channels=3, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                 out_features=["stage1", "stage2", "stage3", "stage4"])
    config = tf.UperNetConfig(backbone_config=backbone, hidden_size=32, auxiliary_in_channels=64, num_labels=4,
                              use_auxiliary_head=False)
    model = tf.UperNetForSemanticSegmentation(config)
    return _spec("upernet_convnext", model, (_image(),), ["pixel_values"], ("logits",))


def _depth_anything() -> Any:
    import transformers as tf

    _seeded()
    backbone = tf.Dinov2Config(image_size=IMAGE, patch_size=16, hidden_size=32, num_hidden_layers=4,
                               num_attention_heads=2, mlp_ratio=2, out_indices=[1, 2, 3, 4],
                               reshape_hidden_states=False)
    config = tf.DepthAnythingConfig(backbone_config=backbone, patch_size=16, reassemble_hidden_size=32,
                                    neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=16, head_hidden_size=8,
                                    depth_estimation_type="metric")  # sigmoid head: random weights keep it alive
    model = tf.DepthAnythingForDepthEstimation(config)
    return _spec("depth_anything", model, (_image(),), ["pixel_values"], ("predicted_depth",))


#: name → (category, builder)
ARCHITECTURES: dict[str, tuple[str, Callable[[], Any]]] = {
    # convolutional
    "resnet": ("cnn", _vision("resnet", "ResNetConfig", "ResNetForImageClassification", ("logits",),
                              embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])),
    "convnext": ("cnn", _vision("convnext", "ConvNextConfig", "ConvNextForImageClassification", ("logits",),
                                hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])),
    "convnextv2": ("cnn", _vision("convnextv2", "ConvNextV2Config", "ConvNextV2ForImageClassification", ("logits",),
                                  hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])),
    "mobilenet_v1": ("cnn", _vision("mobilenet_v1", "MobileNetV1Config", "MobileNetV1ForImageClassification",
                                    ("logits",), image_size=IMAGE, depth_multiplier=0.25)),
    "mobilenet_v2": ("cnn", _vision("mobilenet_v2", "MobileNetV2Config", "MobileNetV2ForImageClassification",
                                    ("logits",), image_size=IMAGE, depth_multiplier=0.35)),
    "efficientnet": ("cnn", _vision("efficientnet", "EfficientNetConfig", "EfficientNetForImageClassification",
                                    ("logits",), image_size=IMAGE, width_coefficient=0.25, depth_coefficient=0.25,
                                    hidden_dim=320)),
    "regnet": ("cnn", _vision("regnet", "RegNetConfig", "RegNetForImageClassification", ("logits",),
                              embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], groups_width=8)),
    "bit": ("cnn", _vision("bit", "BitConfig", "BitForImageClassification", ("logits",), embedding_size=16,
                           hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], num_groups=4)),
    "poolformer": ("cnn", _vision("poolformer", "PoolFormerConfig", "PoolFormerForImageClassification", ("logits",),
                                  hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])),
    "mobilevit": ("hybrid", _vision("mobilevit", "MobileViTConfig", "MobileViTForImageClassification", ("logits",),
                                    image_size=IMAGE, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32,
                                                                                                    40, 48, 64])),
    "levit": ("hybrid", _vision("levit", "LevitConfig", "LevitForImageClassification", ("logits",), image_size=IMAGE,
                                hidden_sizes=[32, 48, 64], num_attention_heads=[1, 2, 2], depths=[1, 1, 1],
                                key_dim=[8, 8, 8])),
    # plain vision transformers
    "vit": ("vit", _vision("vit", "ViTConfig", "ViTForImageClassification", ("logits",), **_VIT)),
    "deit": ("vit", _vision("deit", "DeiTConfig", "DeiTForImageClassification", ("logits",), **_VIT)),
    "beit": ("vit", _vision("beit", "BeitConfig", "BeitForImageClassification", ("logits",),
                            use_relative_position_bias=True, **_VIT)),
    "dinov2": ("vit", _vision("dinov2", "Dinov2Config", "Dinov2Model", ("pooler_output",), **_VIT)),
    # windowed / hierarchical vision transformers
    "swin": ("windowed", _vision("swin", "SwinConfig", "SwinForImageClassification", ("logits",), **_SWIN)),
    "swinv2": ("windowed", _vision("swinv2", "Swinv2Config", "Swinv2ForImageClassification", ("logits",), **_SWIN)),
    "hiera": ("windowed", _vision("hiera", "HieraConfig", "HieraForImageClassification", ("logits",),
                                  image_size=[IMAGE, IMAGE], embed_dim=16, depths=[1, 1, 1, 1],
                                  num_heads=[1, 2, 2, 4], patch_stride=[4, 4], masked_unit_size=[8, 8],
                                  query_stride=[2, 2])),
    "pvt_v2": ("windowed", _vision("pvt_v2", "PvtV2Config", "PvtV2ForImageClassification", ("logits",),
                                   image_size=IMAGE, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                   num_attention_heads=[1, 2, 2, 4])),
    "vitdet": ("windowed", _vision("vitdet", "VitDetConfig", "VitDetModel", ("last_hidden_state",), image_size=IMAGE,
                                   pretrain_image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, mlp_ratio=2, window_size=4, window_block_indices=[0],
                                   use_relative_position_embeddings=True)),
    "sam_vision": ("windowed", _vision("sam_vision", "SamVisionConfig", "SamVisionModel", ("last_hidden_state",),
                                       image_size=IMAGE, patch_size=8, hidden_size=32, output_channels=16,
                                       num_hidden_layers=2, num_attention_heads=2, window_size=4,
                                       global_attn_indexes=[1], mlp_dim=64)),
    "swin2sr": ("windowed", _vision("swin2sr", "Swin2SRConfig", "Swin2SRForImageSuperResolution", ("reconstruction",),
                                    size=32, image_size=32, embed_dim=16, depths=[2], num_heads=[2], window_size=4,
                                    upscale=2, upsampler="pixelshuffledirect")),
    "mobilevitv2": ("hybrid", _vision("mobilevitv2", "MobileViTV2Config", "MobileViTV2Model", ("last_hidden_state",),
                                      image_size=IMAGE, width_multiplier=0.25)),
    "swiftformer": ("hybrid", _vision("swiftformer", "SwiftFormerConfig", "SwiftFormerForImageClassification",
                                      ("logits",), image_size=IMAGE, depths=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64])),
    "focalnet": ("windowed", _vision("focalnet", "FocalNetConfig", "FocalNetForImageClassification", ("logits",),
                                     image_size=IMAGE, embed_dim=16, depths=[1, 1], hidden_sizes=[16, 32])),
    # text encoders
    "bert": ("text", _text("bert", "BertConfig", "BertModel", keys=("last_hidden_state",), **_BERTISH)),
    "distilbert": ("text", _text("distilbert", "DistilBertConfig", "DistilBertModel", dim=32, n_layers=2, n_heads=2,
                                 hidden_dim=64, max_position_embeddings=64)),
    "roberta": ("text", _text("roberta", "RobertaConfig", "RobertaModel", keys=("last_hidden_state",),
                              **{**_BERTISH, "max_position_embeddings": TOKENS + 2 + 8})),
    "albert": ("text", _text("albert", "AlbertConfig", "AlbertModel", keys=("last_hidden_state",), embedding_size=16,
                             **_BERTISH)),
    "electra": ("text", _text("electra", "ElectraConfig", "ElectraModel", keys=("last_hidden_state",),
                              embedding_size=16, **_BERTISH)),
    "deberta_v2": ("text", _text("deberta_v2", "DebertaV2Config", "DebertaV2Model", keys=("last_hidden_state",),
                                 relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"],
                                 **_BERTISH)),
    "mpnet": ("text", _text("mpnet", "MPNetConfig", "MPNetModel", keys=("last_hidden_state",), **_BERTISH)),
    "convbert": ("text", _text("convbert", "ConvBertConfig", "ConvBertModel", keys=("last_hidden_state",),
                               embedding_size=32, **_BERTISH)),
    # audio encoders
    "wav2vec2": ("audio", _audio("wav2vec2", "Wav2Vec2Config", "Wav2Vec2Model", **_W2V)),
    "hubert": ("audio", _audio("hubert", "HubertConfig", "HubertModel", **_W2V)),
    "wavlm": ("audio", _audio("wavlm", "WavLMConfig", "WavLMModel", num_buckets=16, max_bucket_distance=32, **_W2V)),
    "data2vec_audio": ("audio", _audio("data2vec_audio", "Data2VecAudioConfig", "Data2VecAudioModel",
                                       **{k: v for k, v in _W2V.items() if k not in ("do_stable_layer_norm",
                                                                                     "feat_extract_norm")},
                                       conv_pos_kernel_size=5)),
    "sew": ("audio", _audio("sew", "SEWConfig", "SEWModel", **{k: v for k, v in _W2V.items()
                                                                if k not in ("do_stable_layer_norm",
                                                                             "feat_extract_norm")},
                            squeeze_factor=2)),
    "whisper_encoder": ("audio", _whisper),
    "ast": ("audio", _ast),
    # segmentation / dense prediction
    "segformer": ("segmentation", _vision("segformer", "SegformerConfig", "SegformerForSemanticSegmentation",
                                          ("logits",), hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1],
                                          num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=32, num_labels=4)),
    "dpt": ("segmentation", _vision("dpt", "DPTConfig", "DPTForSemanticSegmentation", ("logits",), image_size=IMAGE,
                                    patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                    intermediate_size=64, backbone_out_indices=[0, 1, 2, 3],
                                    neck_hidden_sizes=[16, 32, 48, 64], fusion_hidden_size=32, num_labels=4)),
    "mobilevit_seg": ("segmentation", _vision("mobilevit_seg", "MobileViTConfig", "MobileViTForSemanticSegmentation",
                                              ("logits",), image_size=IMAGE, hidden_sizes=[32, 48, 64],
                                              neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 64], aspp_out_channels=32,
                                              num_labels=4)),
    "upernet_convnext": ("segmentation", _upernet),
    "depth_anything": ("segmentation", _depth_anything),
    "glpn": ("segmentation", _vision("glpn", "GLPNConfig", "GLPNForDepthEstimation", ("predicted_depth",),
                                     hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1],
                                     num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=16)),
    # multimodal towers
    "clip_vision": ("multimodal", _vision("clip_vision", "CLIPVisionConfig", "CLIPVisionModelWithProjection",
                                          ("image_embeds",), projection_dim=32, **_VIT)),
    "clip_text": ("multimodal", _clip_text),
    "siglip_vision": ("multimodal", _vision("siglip_vision", "SiglipVisionConfig", "SiglipVisionModel",
                                            ("pooler_output",), **_VIT)),
    "siglip_text": ("multimodal", _siglip_text),
    "owlvit_vision": ("multimodal", _vision("owlvit_vision", "OwlViTVisionConfig", "OwlViTVisionModel",
                                            ("pooler_output",), **_VIT)),
}


#: the default matrix (``benchmarks/coverage.py`` without ``--archs``): every category and every repair, sized to
#: run in under 15 minutes on 2 idle cores; ``--archs all`` runs every architecture above
DEFAULT = ("resnet", "convnext", "mobilenet_v2", "efficientnet", "mobilevit", "mobilevitv2", "levit", "vit", "beit",
           "dinov2", "swin", "swinv2", "hiera", "focalnet", "vitdet", "sam_vision", "bert", "distilbert",
           "deberta_v2", "convbert", "wav2vec2", "sew", "whisper_encoder", "ast", "segformer", "upernet_convnext",
           "clip_vision", "clip_text", "siglip_vision", "siglip_text")


def build(name: str) -> Any:
    """The :class:`mobilize.ModelSpec` of architecture ``name``."""
    return ARCHITECTURES[name][1]()
