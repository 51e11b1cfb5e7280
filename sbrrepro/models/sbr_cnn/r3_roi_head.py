"""R^3-CNN's RoI head: H head pairs (B, M) reused over L_t training loops and L_e evaluation loops.

Loop t samples its RoIs with its own assigner (IoU threshold u_t) and sampler, runs the bbox head of
the pair `head_of_loop[t]`, weights its losses by alpha_t, and regresses the RoIs that feed loop t+1.
As in HTC (interleaved), the regressed RoIs are sampled again to train the mask head, which loops
internally: at loop t the mask heads of loops 0..t-1 are chained on the same RoI features before the
head of loop t (SBR-CNN's `with_mask_loop`). At inference the raw class scores are averaged over the
L_e loops and the sigmoid masks of the L_e mask loops are averaged.

Optional Mask IoU head (SBR-CNN): trained on the last training loop only, on the mask of that loop's
head (its loss `loss_mask_iou` is not weighted by alpha_t). At inference it scores the last mask loop's
prediction for each detected label; `mask_scores = IoU[label] * score` is the segm score, while
`scores` stays the class score used for bbox AP (CocoMetric reads `mask_scores` for segm only, so
rescoring `scores` would change the bbox AP too).

Indices: `loop` indexes train_cfg, assigners, samplers and loss weights; `head` = head_of_loop[loop]
indexes the heads and RoI extractors (with H < L_t the two differ: mixing them trains the wrong head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.models.utils import empty_instances, unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi, get_box_tensor
from mmdet.utils import ConfigType
from mmengine.model import ModuleList
from mmengine.structures import InstanceData
from torch import Tensor

from ..common import IoURecordingSampler


def _as_list(cfg, n: int) -> list:
    return list(cfg) if isinstance(cfg, (list, tuple)) else [cfg] * n


@MODELS.register_module()
class R3RoIHead(CascadeRoIHead):
    def __init__(self, train_loops: int, head_of_loop: Sequence[int], loop_loss_weights: Sequence[float],
                 eval_loops: int | None = None, mask_loop: bool = True, mask_iou_head: ConfigType | None = None,
                 **kwargs) -> None:
        self.head_of_loop = list(head_of_loop)
        self.eval_loops = eval_loops or train_loops
        self.mask_loop = mask_loop
        self.num_heads = max(self.head_of_loop) + 1
        if len(self.head_of_loop) < max(train_loops, self.eval_loops):
            raise ValueError(f"head_of_loop {self.head_of_loop} needs an entry for each of "
                             f"{max(train_loops, self.eval_loops)} loops")
        if len(loop_loss_weights) != train_loops:
            raise ValueError(f"loop_loss_weights needs {train_loops} values, got {list(loop_loss_weights)}")
        super().__init__(num_stages=train_loops, stage_loss_weights=list(loop_loss_weights), **kwargs)
        if mask_iou_head is not None and not self.with_mask:
            raise ValueError("a mask_iou_head needs a mask head")
        self.mask_iou_head = MODELS.build(mask_iou_head) if mask_iou_head is not None else None

    @property
    def with_mask_iou(self) -> bool:
        return self.mask_iou_head is not None

    # ---- construction: H heads and extractors, not one per loop (loops share their pair's weights) -
    def _build_pairs(self, extractor_cfg, head_cfg) -> tuple[ModuleList, ModuleList]:
        heads = _as_list(head_cfg, self.num_heads)
        extractors = _as_list(extractor_cfg, self.num_heads)
        if not len(heads) == len(extractors) == self.num_heads:
            raise ValueError(f"expected {self.num_heads} heads and RoI extractors for head_of_loop "
                             f"{self.head_of_loop}, got {len(heads)} and {len(extractors)}")
        return ModuleList(MODELS.build(e) for e in extractors), ModuleList(MODELS.build(h) for h in heads)

    def init_bbox_head(self, bbox_roi_extractor, bbox_head) -> None:
        self.bbox_roi_extractor, self.bbox_head = self._build_pairs(bbox_roi_extractor, bbox_head)

    def init_mask_head(self, mask_roi_extractor, mask_head) -> None:
        self.share_roi_extractor = mask_roi_extractor is None
        if self.share_roi_extractor:
            self.mask_head = ModuleList(MODELS.build(h) for h in _as_list(mask_head, self.num_heads))
            self.mask_roi_extractor = self.bbox_roi_extractor
        else:
            self.mask_roi_extractor, self.mask_head = self._build_pairs(mask_roi_extractor, mask_head)

    # ---- training --------------------------------------------------------------------------------
    def _sample(self, loop: int, x: tuple[Tensor], results_list, batch_gt_instances, batch_gt_ignore,
                record_iou: bool) -> list:
        sampler = self.bbox_sampler[loop]
        extra = {"record_iou": record_iou} if isinstance(sampler, IoURecordingSampler) else {}
        sampling_results = []
        for i, results in enumerate(results_list):
            if "bboxes" in results:
                results.priors = results.pop("bboxes")
            assign_result = self.bbox_assigner[loop].assign(results, batch_gt_instances[i], batch_gt_ignore[i])
            sampling_results.append(sampler.sample(
                assign_result, results, batch_gt_instances[i], feats=[f[i][None] for f in x], **extra))
        return sampling_results

    def _loop_bbox_loss(self, loop: int, x: tuple[Tensor], sampling_results: list) -> dict:
        head = self.head_of_loop[loop]
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = self._bbox_forward(head, x, rois)
        bbox_results["rois"] = rois
        bbox_results.update(self.bbox_head[head].loss_and_target(
            cls_score=bbox_results["cls_score"], bbox_pred=bbox_results["bbox_pred"], rois=rois,
            sampling_results=sampling_results, rcnn_train_cfg=self.train_cfg[loop]))
        return bbox_results

    def _loop_mask_loss(self, loop: int, x: tuple[Tensor], sampling_results: list, batch_gt_instances) -> dict:
        head = self.head_of_loop[loop]
        extractor = self.mask_roi_extractor[head]
        mask_feats = extractor(x[:extractor.num_inputs], bbox2roi([r.pos_priors for r in sampling_results]))
        # The internal mask loop: without mask_loop the chain length follows the head index, which is
        # the behaviour of the R^3-CNN paper's code (kept for its ablations).
        feat = None
        for k in range(loop if self.mask_loop else head):
            feat = self.mask_head[self.head_of_loop[k]](mask_feats, feat, return_logits=False)
        mask_preds = self.mask_head[head](mask_feats, feat, return_feat=False)
        results = self.mask_head[head].loss_and_target(
            mask_preds=mask_preds, sampling_results=sampling_results,
            batch_gt_instances=batch_gt_instances, rcnn_train_cfg=self.train_cfg[loop])
        if self.with_mask_iou and loop == self.num_stages - 1:
            # The IoU head learns the quality of the mask that inference scores: the last loop's.
            # As in MMDetection's MaskScoringRoIHead, its loss also reaches the mask logits.
            labels = torch.cat([res.pos_gt_labels for res in sampling_results])
            rows = torch.arange(len(labels), device=labels.device)
            pos_mask_preds = mask_preds[rows, labels]
            mask_iou_preds = self.mask_iou_head(mask_feats, pos_mask_preds)[rows, labels]
            results.update(self.mask_iou_head.loss_and_target(
                mask_iou_preds, pos_mask_preds, results["mask_targets"], sampling_results, batch_gt_instances,
                self.train_cfg[loop]))
        return results

    def loss(self, x: tuple[Tensor], rpn_results_list: list[InstanceData],
             batch_data_samples: SampleList) -> dict:
        batch_gt_instances, batch_gt_ignore, batch_img_metas = unpack_gt_instances(batch_data_samples)
        losses: dict[str, Tensor] = {}
        results_list = rpn_results_list
        for loop in range(self.num_stages):
            self.current_stage = loop
            weight = self.stage_loss_weights[loop]
            head = self.head_of_loop[loop]
            sampling_results = self._sample(loop, x, results_list, batch_gt_instances, batch_gt_ignore, True)
            bbox_results = self._loop_bbox_loss(loop, x, sampling_results)
            parts = dict(bbox_results["loss_bbox"])
            # The regressed RoIs feed the mask branch of this loop and the next loop.
            with torch.no_grad():
                results_list = self.bbox_head[head].refine_bboxes(sampling_results, bbox_results, batch_img_metas)
            if results_list is not None and self.with_mask:
                mask_sampling = self._sample(loop, x, results_list, batch_gt_instances, batch_gt_ignore, False)
                mask_results = self._loop_mask_loss(loop, x, mask_sampling, batch_gt_instances)
                parts.update(mask_results["loss_mask"])
                if "loss_mask_iou" in mask_results:  # not weighted by alpha_t, as in the authors' code
                    losses["loss_mask_iou"] = mask_results["loss_mask_iou"]
            for name, value in parts.items():
                losses[f"s{loop}.{name}"] = value * weight if "loss" in name else value
            if results_list is None:  # no RoI left to refine
                break
        return losses

    # ---- inference -------------------------------------------------------------------------------
    def _refine_roi(self, x: tuple[Tensor], rois: Tensor, batch_img_metas: list[dict],
                    num_proposals_per_img: Sequence[int], **kwargs) -> tuple:
        """Run the L_e loops; return the last loop's input RoIs and bbox deltas per image, and the
        raw class scores averaged over the loops (softmax comes later, in predict_by_feat)."""
        ms_scores = []
        for loop in range(self.eval_loops):
            head = self.head_of_loop[loop]
            bbox_results = self._bbox_forward(head, x, rois)
            rois = rois.split(num_proposals_per_img, 0)
            cls_scores = bbox_results["cls_score"].split(num_proposals_per_img, 0)
            bbox_preds = bbox_results["bbox_pred"].split(num_proposals_per_img, 0)
            ms_scores.append(cls_scores)
            if loop < self.eval_loops - 1:
                refined = []
                for i, img_meta in enumerate(batch_img_metas):
                    if rois[i].shape[0] > 0:
                        labels = cls_scores[i][:, :-1].argmax(dim=1)
                        boxes = self.bbox_head[head].regress_by_class(rois[i][:, 1:], labels, bbox_preds[i], img_meta)
                        refined.append(torch.cat([rois[i][:, [0]], get_box_tensor(boxes)], dim=1))
                rois = torch.cat(refined)
        cls_scores = [sum(s[i] for s in ms_scores) / len(ms_scores) for i in range(len(batch_img_metas))]
        return rois, cls_scores, bbox_preds

    @property
    def _last_head(self) -> int:
        """The pair of the last evaluation loop: its coder decodes the final deltas. (The authors'
        code decodes with the last pair built, which differs only for alternations such as 'aba'.)"""
        return self.head_of_loop[self.eval_loops - 1]

    def predict_bbox(self, x: tuple[Tensor], batch_img_metas: list[dict], rpn_results_list: list[InstanceData],
                     rcnn_test_cfg, rescale: bool = False, **kwargs) -> list[InstanceData]:
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        bbox_head = self.bbox_head[self._last_head]
        if rois.shape[0] == 0:
            return empty_instances(batch_img_metas, rois.device, task_type="bbox",
                                   box_type=bbox_head.predict_box_type, num_classes=bbox_head.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)
        rois, cls_scores, bbox_preds = self._refine_roi(x, rois, batch_img_metas, [len(p) for p in proposals])
        return bbox_head.predict_by_feat(rois=rois, cls_scores=cls_scores, bbox_preds=bbox_preds,
                                         batch_img_metas=batch_img_metas, rescale=rescale,
                                         rcnn_test_cfg=rcnn_test_cfg)

    def _mask_loops(self, x: tuple[Tensor], rois: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The RoI features (extracted once) and the mask logits of each of the L_e mask loops."""
        extractor = self.mask_roi_extractor[self._last_head]
        mask_feats = extractor(x[:extractor.num_inputs], rois)
        feat, logits = None, []
        for loop in range(self.eval_loops):
            mask_preds, feat = self.mask_head[self.head_of_loop[loop]](mask_feats, feat)
            logits.append(mask_preds)
        return mask_feats, logits

    def _looped_masks(self, x: tuple[Tensor], rois: Tensor) -> Tensor:
        """Sigmoid masks averaged over the L_e mask loops, on RoI features extracted once."""
        return torch.stack([m.sigmoid() for m in self._mask_loops(x, rois)[1]]).mean(0)

    def _mask_iou(self, mask_feats: Tensor, mask_logits: Tensor, labels: Tensor) -> Tensor:
        """The predicted IoU of each RoI's mask (logits of one loop) for its label."""
        rows = torch.arange(len(labels), device=labels.device)
        return self.mask_iou_head(mask_feats, mask_logits[rows, labels])[rows, labels]

    def predict_mask(self, x: tuple[Tensor], batch_img_metas: list[dict], results_list: list[InstanceData],
                     rescale: bool = False) -> list[InstanceData]:
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if mask_rois.shape[0] == 0:
            if self.with_mask_iou:  # the same fields whether or not there are detections
                for res in results_list:
                    res.mask_scores = res.scores.clone()
            return empty_instances(batch_img_metas, mask_rois.device, task_type="mask",
                                   instance_results=results_list, mask_thr_binary=self.test_cfg.mask_thr_binary)
        mask_feats, logits = self._mask_loops(x, mask_rois)
        per_image = [len(r) for r in results_list]
        if self.with_mask_iou:
            labels = torch.cat([res.labels for res in results_list])
            mask_iou = self._mask_iou(mask_feats, logits[-1], labels).split(per_image, 0)
            for res, iou in zip(results_list, mask_iou):
                res.mask_scores = iou * res.scores  # segm score only; `scores` stays the bbox score
        masks = torch.stack([m.sigmoid() for m in logits]).mean(0).split(per_image, 0)
        return self.mask_head[self._last_head].predict_by_feat(
            mask_preds=masks, results_list=results_list, batch_img_metas=batch_img_metas,
            rcnn_test_cfg=self.test_cfg, rescale=rescale, activate_map=True)

    def forward(self, x: tuple[Tensor], rpn_results_list: list[InstanceData],
                batch_data_samples: SampleList) -> tuple:
        """Tensor mode (used by complexity tools): the loops without post-processing; with a Mask IoU
        head also its IoU predictions, for the top-scoring class of each RoI."""
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        proposals = [res.bboxes for res in rpn_results_list]
        rois, cls_scores, bbox_preds = self._refine_roi(
            x, bbox2roi(proposals), batch_img_metas, [len(p) for p in proposals])
        results: tuple = (cls_scores, bbox_preds)
        if self.with_mask:
            mask_feats, logits = self._mask_loops(x, torch.cat(rois))
            results += (torch.stack([m.sigmoid() for m in logits]).mean(0),)
            if self.with_mask_iou:
                labels = torch.cat(cls_scores)[:, :-1].argmax(dim=1)
                results += (self._mask_iou(mask_feats, logits[-1], labels),)
        return results
