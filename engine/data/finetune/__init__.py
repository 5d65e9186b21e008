"""Fine-tuning the engine's networks on a labelled collection (``streamseg finetune``).

- ``sam2``: SAM 2's prompt encoder and mask decoder, image encoder frozen (its features cached per
  augmented view), Dice + BCE; writes a checkpoint ``--tracker-weights`` loads.
- ``yolo``: YOLOv8-seg through Ultralytics' own trainer on the collection's YOLO-seg layout; writes a
  ``.pt`` that ``--weights`` loads.
- ``common``: the run folder, resuming, the step loop and the report, shared by step-based tasks (a
  semantic-segmentation task with Dice + CE plugs in as another ``StepTask``).

Nothing here is imported by ``engine.data``: training pulls in albumentations, matplotlib and Ultralytics.
"""
