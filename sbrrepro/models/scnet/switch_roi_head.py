"""SCNet's RoI head with its feature relay optional (Vu et al., AAAI 2021): MMDetection 3.3's
`SCNetRoIHead` trains without a feature relay head but calls it unconditionally at test (`predict_mask`,
`forward`); `SCNetSwitchRoIHead` calls it only when there is one. Without a global context head the
stock head already runs."""

from __future__ import annotations

from mmdet.models.roi_heads import SCNetRoIHead
from mmdet.models.utils import empty_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import InstanceList
from torch import Tensor

from .cascade_passes import tensor_box_pass


@MODELS.register_module()
class SCNetSwitchRoIHead(SCNetRoIHead):
    """SCNetRoIHead that also runs without `feat_relay_head` (and, as the stock head already does,
    without `glbctx_head`). Training is MMDetection's own: its `loss` and `mask_loss` already skip
    the relay when there is none."""

    def _relayed_feat(self, x: tuple[Tensor, ...], rois: Tensor, semantic_feat: Tensor | None,
                      glbctx_feat: Tensor | None) -> Tensor | None:
        """The last box head's relayed feature for `rois`; None (and no extra box forward) without a
        feature relay head."""
        if not self.with_feat_relay:
            return None
        shared = self._bbox_forward(stage=-1, x=x, rois=rois, semantic_feat=semantic_feat,
                                    glbctx_feat=glbctx_feat)["relayed_feat"]
        return self.feat_relay_head(shared)

    def predict_mask(self, x: tuple[Tensor, ...], semantic_heat: Tensor | None, glbctx_feat: Tensor | None,
                     batch_img_metas: list[dict], results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        bboxes = [res.bboxes for res in results_list]
        mask_rois = bbox2roi(bboxes)
        if mask_rois.shape[0] == 0:
            return empty_instances(batch_img_metas=batch_img_metas, device=mask_rois.device, task_type="mask",
                                   instance_results=results_list, mask_thr_binary=self.test_cfg.mask_thr_binary)
        relayed_feat = self._relayed_feat(x, mask_rois, semantic_heat, glbctx_feat)
        mask_preds = self._mask_forward(x=x, rois=mask_rois, semantic_feat=semantic_heat, glbctx_feat=glbctx_feat,
                                        relayed_feat=relayed_feat)["mask_preds"]
        mask_preds = mask_preds.split(tuple(len(b) for b in bboxes), 0)
        return self.mask_head.predict_by_feat(mask_preds=mask_preds, results_list=results_list,
                                              batch_img_metas=batch_img_metas, rcnn_test_cfg=self.test_cfg,
                                              rescale=rescale)

    def forward(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList,
                batch_data_samples: SampleList) -> tuple:
        semantic_feat, glbctx_feat, rois, cls_scores, bbox_preds, counts = tensor_box_pass(
            self, x, rpn_results_list, batch_data_samples)
        relayed_feat = self._relayed_feat(x, rois, semantic_feat, glbctx_feat)
        mask_preds = self._mask_forward(x=x, rois=rois, semantic_feat=semantic_feat, glbctx_feat=glbctx_feat,
                                        relayed_feat=relayed_feat)["mask_preds"]
        return cls_scores, bbox_preds, mask_preds.split(counts, 0)

