"""Cascade Mask R-CNN with HTC's semantic branch, the SCNet paper's baseline (Vu et al., AAAI 2021), to which
SCNet's components can be added one at a time: `SemanticCascadeRoIHead` is HTC without interleaving and
mask information flow, whose box and mask RoI features get HTC's semantic features (`fuse_semantic`); mask
head t trains on stage t's positives ('own') or on the last stage's ('last': the naive sample
consistency); at test every mask head runs on the final boxes and their sigmoid masks are averaged, as
HTCMeanMaskRoIHead does. Optional: a feature relay head per stage (SCNet's, from box head t's shared fc
feature to mask head t) and SCNet's global context head. With one stage it is Mask R-CNN with the
semantic branch.
"""

from __future__ import annotations

import torch
from mmdet.models.roi_heads.bbox_heads import SCNetBBoxHead
from mmdet.models.roi_heads.mask_heads import HTCMaskHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.models.test_time_augs import merge_aug_masks
from mmdet.models.utils import empty_instances, unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import InstanceList
from mmengine.model import ModuleList
from torch import Tensor

from ..common import HTCMeanMaskRoIHead, fuse_semantic
from .cascade_passes import context_feats, tensor_box_pass

MASK_SAMPLES = ("own", "last")


@MODELS.register_module()
class SemanticCascadeRoIHead(HTCMeanMaskRoIHead):
    """Cascade Mask R-CNN (Mask R-CNN with `num_stages=1`) with HTC's semantic branch, and optionally
    SCNet's feature relay (one head per stage) and global context, and the naive sample consistency.

    Args:
        feat_relay_head: a FeatureRelayHead config, built once per stage; the box heads must then be
            SCNetBBoxHead (their shared fc feature is what is relayed).
        glbctx_head: a GlobalContextHead config; its loss is `loss_glbctx` and its per-image feature is
            added to every stage's box and mask RoI features.
        mask_samples: 'own' trains mask head t on stage t's positives; 'last' trains every mask head
            on the last stage's positives (the naive sample consistency).
        interleaved, mask_info_flow: must be False (accepted so that an HTC config can be reused).
        Other arguments are HybridTaskCascadeRoIHead's.
    """

    def __init__(self, num_stages: int, stage_loss_weights: list[float], feat_relay_head: dict | None = None,
                 glbctx_head: dict | None = None, mask_samples: str = "own", interleaved: bool = False,
                 mask_info_flow: bool = False, **kwargs) -> None:
        if interleaved or mask_info_flow:
            raise ValueError("SemanticCascadeRoIHead is HTC without interleaving and mask information flow: "
                             f"got interleaved={interleaved}, mask_info_flow={mask_info_flow}; both must be False")
        if mask_samples not in MASK_SAMPLES:
            raise ValueError(f"mask_samples must be one of {MASK_SAMPLES}, got {mask_samples!r}")
        super().__init__(num_stages=num_stages, stage_loss_weights=stage_loss_weights, interleaved=False,
                         mask_info_flow=False, **kwargs)
        if not self.with_mask:
            raise ValueError("SemanticCascadeRoIHead needs mask_head and mask_roi_extractor")
        self.mask_samples = mask_samples
        # without mask information flow a residual conv would never be used (and DDP would fail on it)
        with_res = [i for i, h in enumerate(self.mask_head) if getattr(h, "with_conv_res", False)]
        if with_res:
            raise ValueError(f"mask heads {with_res} have with_conv_res=True, which is unused without mask "
                             "information flow: set with_conv_res=False")
        if feat_relay_head is not None:
            not_scnet = [i for i, h in enumerate(self.bbox_head) if not isinstance(h, SCNetBBoxHead)]
            if not_scnet:
                raise ValueError(f"the feature relay needs SCNetBBoxHead box heads; stages {not_scnet} are not")
            self.feat_relay_head = ModuleList([MODELS.build(feat_relay_head) for _ in range(num_stages)])
        if glbctx_head is not None:
            self.glbctx_head = MODELS.build(glbctx_head)

    @property
    def with_feat_relay(self) -> bool:
        return getattr(self, "feat_relay_head", None) is not None

    @property
    def with_glbctx(self) -> bool:
        return getattr(self, "glbctx_head", None) is not None

    # ---- features

    def _fuse(self, feats: Tensor, rois: Tensor, semantic_feat: Tensor | None, glbctx_feat: Tensor | None,
              branch: str) -> Tensor:
        """RoI features plus the pooled semantic features (as HTC) and the RoI's image's global context
        feature (as SCNet's _fuse_glbctx)."""
        feats = fuse_semantic(self, feats, rois, semantic_feat, branch)
        if self.with_glbctx and glbctx_feat is not None:
            feats = feats + glbctx_feat[rois[:, 0].long()]  # (n, C, 1, 1): broadcast over each RoI
        return feats

    def _bbox_forward(self, stage: int, x: tuple[Tensor, ...], rois: Tensor, semantic_feat: Tensor | None = None,
                      glbctx_feat: Tensor | None = None) -> dict[str, Tensor]:
        extractor = self.bbox_roi_extractor[stage]
        feats = self._fuse(extractor(x[:extractor.num_inputs], rois), rois, semantic_feat, glbctx_feat, "bbox")
        if self.with_feat_relay:
            cls_score, bbox_pred, shared_feat = self.bbox_head[stage](feats, return_shared_feat=True)
            return dict(cls_score=cls_score, bbox_pred=bbox_pred, shared_feat=shared_feat)
        cls_score, bbox_pred = self.bbox_head[stage](feats)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred)

    def _mask_logits(self, stage: int, feats: Tensor, shared_feat: Tensor | None) -> Tensor:
        """Mask head `stage` on fused mask RoI features, with relay head `stage` on the box head's shared
        features of the same RoIs added first."""
        if self.with_feat_relay and shared_feat is not None:
            relayed = self.feat_relay_head[stage](shared_feat)
            if relayed is not None:  # None when there are no RoIs
                feats = feats + relayed
        head = self.mask_head[stage]
        return head(feats, return_feat=False) if isinstance(head, HTCMaskHead) else head(feats)

    # ---- training

    def bbox_loss(self, stage: int, x: tuple[Tensor, ...], sampling_results: list[SamplingResult],
                  semantic_feat: Tensor | None = None, glbctx_feat: Tensor | None = None) -> dict:
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = self._bbox_forward(stage, x, rois, semantic_feat, glbctx_feat)
        bbox_results.update(rois=rois)
        bbox_results.update(self.bbox_head[stage].loss_and_target(
            cls_score=bbox_results["cls_score"], bbox_pred=bbox_results["bbox_pred"], rois=rois,
            sampling_results=sampling_results, rcnn_train_cfg=self.train_cfg[stage]))
        return bbox_results

    def mask_loss(self, stage: int, x: tuple[Tensor, ...], sampling_results: list[SamplingResult],
                  batch_gt_instances: InstanceList, semantic_feat: Tensor | None = None,
                  glbctx_feat: Tensor | None = None, shared_feat: Tensor | None = None) -> dict:
        """Mask head `stage` on the positives of `sampling_results`; `shared_feat` is box head `stage`'s
        shared feature of those positives (with a feature relay)."""
        pos_rois = bbox2roi([res.pos_priors for res in sampling_results])
        extractor = self.mask_roi_extractor[stage]
        feats = self._fuse(extractor(x[:extractor.num_inputs], pos_rois), pos_rois, semantic_feat, glbctx_feat,
                           "mask")
        mask_preds = self._mask_logits(stage, feats, shared_feat)
        results = dict(mask_preds=mask_preds)
        results.update(self.mask_head[stage].loss_and_target(
            mask_preds=mask_preds, sampling_results=sampling_results, batch_gt_instances=batch_gt_instances,
            rcnn_train_cfg=self.train_cfg[stage]))
        return results

    @staticmethod
    def _pos_slice(feats: Tensor, sampling_results: list[SamplingResult]) -> Tensor:
        """The rows of the positives in features of every sampled RoI: each image's priors are its
        positives then its negatives (as SCNetRoIHead._slice_pos_feats)."""
        keep, start = [], 0
        for res in sampling_results:
            keep.append(torch.arange(start, start + len(res.pos_priors), device=feats.device))
            start += len(res.priors)
        return feats[torch.cat(keep)]

    def loss(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList, batch_data_samples: SampleList) -> dict:
        assert len(rpn_results_list) == len(batch_data_samples)
        batch_gt_instances, batch_gt_instances_ignore, batch_img_metas = unpack_gt_instances(batch_data_samples)
        losses = {}
        semantic_feat = glbctx_feat = None
        if self.with_semantic:
            gt_semantic_segs = torch.stack([s.gt_sem_seg.sem_seg for s in batch_data_samples])
            semantic_pred, semantic_feat = self.semantic_head(x)
            losses["loss_semantic_seg"] = self.semantic_head.loss(semantic_pred, gt_semantic_segs)
        if self.with_glbctx:
            mc_pred, glbctx_feat = self.glbctx_head(x)
            losses["loss_glbctx"] = self.glbctx_head.loss(mc_pred, [g.labels for g in batch_gt_instances])

        def add(stage: int, parts: dict[str, Tensor]) -> None:
            for name, value in parts.items():
                losses[f"s{stage}.{name}"] = value * self.stage_loss_weights[stage] if "loss" in name else value

        results_list = rpn_results_list
        for stage in range(self.num_stages):
            self.current_stage = stage
            sampling_results = []
            for i in range(len(batch_img_metas)):
                results = results_list[i]
                results.priors = results.pop("bboxes")
                assign_result = self.bbox_assigner[stage].assign(results, batch_gt_instances[i],
                                                                 batch_gt_instances_ignore[i])
                sampling_results.append(self.bbox_sampler[stage].sample(
                    assign_result, results, batch_gt_instances[i], feats=[lvl[i][None] for lvl in x]))
            bbox_results = self.bbox_loss(stage, x, sampling_results, semantic_feat, glbctx_feat)
            add(stage, bbox_results["loss_bbox"])
            if self.mask_samples == "own":
                shared = (self._pos_slice(bbox_results["shared_feat"], sampling_results)
                          if self.with_feat_relay else None)
                add(stage, self.mask_loss(stage, x, sampling_results, batch_gt_instances, semantic_feat,
                                          glbctx_feat, shared)["loss_mask"])
            if stage < self.num_stages - 1:
                with torch.no_grad():
                    results_list = self.bbox_head[stage].refine_bboxes(sampling_results, bbox_results,
                                                                       batch_img_metas)

        if self.mask_samples == "last":  # every mask head on the RoIs the last box stage trained on
            pos_rois = bbox2roi([res.pos_priors for res in sampling_results])
            for stage in range(self.num_stages):
                shared = None
                if self.with_feat_relay:
                    shared = (self._pos_slice(bbox_results["shared_feat"], sampling_results)
                              if stage == self.num_stages - 1
                              else self._bbox_forward(stage, x, pos_rois, semantic_feat, glbctx_feat)["shared_feat"])
                add(stage, self.mask_loss(stage, x, sampling_results, batch_gt_instances, semantic_feat,
                                          glbctx_feat, shared)["loss_mask"])
        return losses

    # ---- test

    def _test_mask_logits(self, x: tuple[Tensor, ...], rois: Tensor, semantic_feat: Tensor | None,
                          glbctx_feat: Tensor | None) -> list[Tensor]:
        """Every mask head's logits for the final boxes `rois`. As HTC, one (parameter-free) RoI
        extraction, the last stage's, serves every head; with a feature relay, box head t runs on
        `rois` for relay head t, as SCNetRoIHead.predict_mask does with its single one."""
        extractor = self.mask_roi_extractor[-1]
        feats = self._fuse(extractor(x[:extractor.num_inputs], rois), rois, semantic_feat, glbctx_feat, "mask")
        logits = []
        for stage in range(self.num_stages):
            shared = (self._bbox_forward(stage, x, rois, semantic_feat, glbctx_feat)["shared_feat"]
                      if self.with_feat_relay else None)
            logits.append(self._mask_logits(stage, feats, shared))
        return logits

    def _merged_masks(self, logits: list[Tensor], counts: list[int], batch_img_metas: list[dict]) -> list[Tensor]:
        """Per image, the mean of the heads' sigmoid masks."""
        per_head = [[m.sigmoid().detach() for m in head.split(counts, 0)] for head in logits]
        return [merge_aug_masks([head[i] for head in per_head], meta) for i, meta in enumerate(batch_img_metas)]

    def predict(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList, batch_data_samples: SampleList,
                rescale: bool = False) -> InstanceList:
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        semantic_feat, glbctx_feat = context_feats(self, x)
        # the mask branch rescales boxes and masks together
        results_list = self.predict_bbox(x=x, batch_img_metas=batch_img_metas, rpn_results_list=rpn_results_list,
                                         rcnn_test_cfg=self.test_cfg, rescale=False, semantic_feat=semantic_feat,
                                         glbctx_feat=glbctx_feat)
        return self.predict_mask(x, semantic_feat, batch_img_metas, results_list, rescale, glbctx_feat=glbctx_feat)

    def predict_mask(self, x: tuple[Tensor, ...], semantic_heat: Tensor | None, batch_img_metas: list[dict],
                     results_list: InstanceList, rescale: bool = False,
                     glbctx_feat: Tensor | None = None) -> InstanceList:
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if mask_rois.shape[0] == 0:
            return empty_instances(batch_img_metas=batch_img_metas, device=mask_rois.device, task_type="mask",
                                   instance_results=results_list, mask_thr_binary=self.test_cfg.mask_thr_binary)
        logits = self._test_mask_logits(x, mask_rois, semantic_heat, glbctx_feat)
        merged = self._merged_masks(logits, [len(res) for res in results_list], batch_img_metas)
        return self.mask_head[-1].predict_by_feat(mask_preds=merged, results_list=results_list,
                                                  batch_img_metas=batch_img_metas, rcnn_test_cfg=self.test_cfg,
                                                  rescale=rescale, activate_map=True)

    def forward(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList,
                batch_data_samples: SampleList) -> tuple:
        semantic_feat, glbctx_feat, rois, cls_scores, bbox_preds, counts = tensor_box_pass(
            self, x, rpn_results_list, batch_data_samples)
        logits = self._test_mask_logits(x, rois, semantic_feat, glbctx_feat)
        return cls_scores, bbox_preds, self._merged_masks(logits, list(counts),
                                                          [s.metainfo for s in batch_data_samples])
