"""A trained model applied to data: a saved model opened with its corpus (``evaluate``, ``predict``)
and :class:`~ada2i_fast.inference.pipeline.ConversationPipeline` for new conversations."""
