"""The Gradio studio: layout and thin handlers over pipelines.PipelineManager.

No torch here and nothing loads at import. (The Generate and PNG Info tabs
arrive with the studio issue.)
"""
