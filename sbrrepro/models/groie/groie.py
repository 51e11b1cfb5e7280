"""GRoIE, the Generic RoI Extractor (GRoIE, ICPR 2020; SBR-CNN section 3.3): a RoI is pooled from every
FPN level, each pooled map goes through the same pre-processing module (shared weights), the maps are
summed, and the sum goes through the post-processing module.

MMDetection's `GenericRoIExtractor` does this with at most one plugin before and one after. The
SBR-CNN ablations (Tables 8-9) also chain two convolutions (7x3 -> 3x7), so here `pre_cfg` and
`post_cfg` may each be None, one plugin config, or a list of plugin configs applied in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import build_plugin_layer
from mmdet.models.roi_heads.roi_extractors import GenericRoIExtractor
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import Sequential
from torch import Tensor, nn

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
        aggregation: 'sum' (GRoIE) or 'concat': the levels side by side, brought back to
            `out_channels` by a 1x1 conv (with ReLU) ahead of the post module.
        level_relu: a ReLU on each level's RoI features after the pre-processing (alone when there
            is none), before aggregating, as the GRoIE authors' code does.

    The forward pass is GenericRoIExtractor's: with a single feature level it returns the plain
    RoIAlign output (pre/post skipped), and with no RoIs an empty tensor of the post module's width.
    """

    def __init__(self, roi_layer: ConfigType, out_channels: int, featmap_strides: list[int],
                 pre_cfg: PluginConfigs = None, post_cfg: PluginConfigs = None, aggregation: str = "sum",
                 level_relu: bool = False, init_cfg: OptMultiConfig = None) -> None:
        # The parent would pass a list straight to build_plugin_layer ("cfg must be a dict"): build here.
        # In concat mode the parent's out_channels is the concatenated width.
        width = out_channels * (len(featmap_strides) if aggregation == "concat" else 1)
        super().__init__(aggregation=aggregation, pre_cfg=None, post_cfg=None, roi_layer=roi_layer,
                         out_channels=width, featmap_strides=featmap_strides, init_cfg=init_cfg)
        pre = build_plugin_chain(pre_cfg, "_pre_module")
        if level_relu:
            pre = nn.ReLU() if pre is None else Sequential(pre, nn.ReLU())
        post = build_plugin_chain(post_cfg, "_post_module")
        if aggregation == "concat":
            reduce = ConvModule(width, out_channels, 1, inplace=False)
            post = reduce if post is None else Sequential(reduce, post)
        self.with_pre = pre is not None
        self.with_post = post is not None
        if pre is not None:
            self.pre_module = pre
        if post is not None:
            self.post_module = post

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor, roi_scale_factor: float | None = None) -> Tensor:
        out = super().forward(feats, rois, roi_scale_factor)
        if rois.size(0) == 0 and self.with_post:  # the parent skips the post module (a concat's reduction)
            return self.post_module(out)
        return out
