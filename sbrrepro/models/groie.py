"""GRoIE, the Generic RoI Extractor (SBR-CNN section 3.3): a RoI is pooled from every FPN level, each
pooled map goes through the same pre-processing module (shared weights), the maps are summed, and the
sum goes through the post-processing module.

MMDetection's `GenericRoIExtractor` does this with at most one plugin before and one after. The
SBR-CNN ablations (Tables 8-9) also chain two convolutions (7x3 -> 3x7), so here `pre_cfg` and
`post_cfg` may each be None, one plugin config, or a list of plugin configs applied in order.
`groie_module` names the modules of the paper's tables, for config generation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mmcv.cnn.bricks import build_plugin_layer
from mmdet.models.roi_heads.roi_extractors import GenericRoIExtractor
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import Sequential
from torch import nn

PluginConfigs = ConfigType | Sequence[ConfigType] | None


def _resolved(cfg: Mapping) -> dict:
    """The config with its type looked up in MMDetection's registry (which falls back to mmcv's), so
    plugins registered by sbrrepro (NonLocal2dK) are found whatever the caller's default scope:
    build_plugin_layer alone searches only the current scope's registry."""
    cfg = dict(cfg)
    if isinstance(cfg.get("type"), str):
        cls = MODELS.get(cfg["type"])
        if cls is None:
            raise KeyError(f"GRoIE: plugin type {cfg['type']!r} is not registered")
        cfg["type"] = cls
    return cfg


def build_plugin_chain(cfgs: PluginConfigs, postfix: str) -> nn.Module | None:
    """None (or an empty list) -> None; one config -> the plugin; several -> them in sequence."""
    if cfgs is None:
        return None
    cfg_list = [cfgs] if isinstance(cfgs, Mapping) else list(cfgs)
    layers = [build_plugin_layer(_resolved(cfg), f"{postfix}{i}")[1] for i, cfg in enumerate(cfg_list)]
    if not layers:
        return None
    # A lone plugin is kept as is, so its parameter names equal those of MMDetection's
    # GenericRoIExtractor (`pre_module.conv.weight`) and its GRoIE checkpoints load unchanged.
    # mmengine's Sequential (not torch's) re-runs each plugin's own init_weights (NL zero-init).
    return layers[0] if len(layers) == 1 else Sequential(*layers)


@MODELS.register_module()
class GRoIE(GenericRoIExtractor):
    """GenericRoIExtractor whose pre/post modules may be chains of plugins.

    Args:
        roi_layer, out_channels, featmap_strides, init_cfg: as for BaseRoIExtractor.
        pre_cfg: plugin config(s) applied, with the same weights, to the RoI features of each level.
        post_cfg: plugin config(s) applied once to the aggregated features.
        aggregation: 'sum' (GRoIE) or 'concat', as in GenericRoIExtractor.

    The forward pass is GenericRoIExtractor's: with a single feature level it returns the plain
    RoIAlign output (pre/post skipped), and with no RoIs an empty tensor.
    """

    def __init__(self, roi_layer: ConfigType, out_channels: int, featmap_strides: list[int],
                 pre_cfg: PluginConfigs = None, post_cfg: PluginConfigs = None, aggregation: str = "sum",
                 init_cfg: OptMultiConfig = None) -> None:
        # The parent would pass a list straight to build_plugin_layer ("cfg must be a dict"): build here.
        super().__init__(aggregation=aggregation, pre_cfg=None, post_cfg=None, roi_layer=roi_layer,
                         out_channels=out_channels, featmap_strides=featmap_strides, init_cfg=init_cfg)
        pre = build_plugin_chain(pre_cfg, "_pre_module")
        post = build_plugin_chain(post_cfg, "_post_module")
        self.with_pre = pre is not None
        self.with_post = post is not None
        if pre is not None:
            self.pre_module = pre
        if post is not None:
            self.post_module = post


def _conv(channels: int, kernel: int | tuple[int, int], padding: int | tuple[int, int]) -> dict:
    # inplace=False as in the authors' and MMDetection's GRoIE configs (no effect on the result)
    return dict(type="ConvModule", in_channels=channels, out_channels=channels, kernel_size=kernel,
                padding=padding, inplace=False)


def groie_module(name: str, channels: int) -> list[dict]:
    """Plugin configs of a named GRoIE pre/post module at `channels` channels.

    'conv3x3', 'conv5x5', 'conv7x7': one ConvModule (+ReLU) keeping the map size.
    'conv7x3-3x7': a 7x3 then a 3x7 ConvModule, padded (3,1) and (1,3) so the map keeps its size.
    'nonlocal1x1': the original embedded-Gaussian non-local block (mmcv NonLocal2d, 1x1 kernels).
    'nonlocal7x7': SBR-CNN's non-local block with 7x7 kernels (NonLocal2dK).
    'attention': the ICPR GRoIE post module, GeneralizedAttention '0100' (query content x relative
        position), 6 heads, key/value stride 2, global range.
    'none': no module (an empty list).
    """
    c = channels
    modules: dict[str, list[dict]] = {
        "none": [],
        "conv3x3": [_conv(c, 3, 1)],
        "conv5x5": [_conv(c, 5, 2)],
        "conv7x7": [_conv(c, 7, 3)],
        "conv7x3-3x7": [_conv(c, (7, 3), (3, 1)), _conv(c, (3, 7), (1, 3))],
        "nonlocal1x1": [dict(type="NonLocal2d", in_channels=c, reduction=2, use_scale=True)],
        "nonlocal7x7": [dict(type="NonLocal2dK", in_channels=c, reduction=2, use_scale=True, kernel_size=7)],
        "attention": [dict(type="GeneralizedAttention", in_channels=c, spatial_range=-1, num_heads=6,
                           attention_type="0100", kv_stride=2)],
    }
    if name not in modules:
        raise ValueError(f"unknown GRoIE module {name!r}; known: {', '.join(modules)}")
    return modules[name]
