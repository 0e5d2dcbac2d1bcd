"""InputAccordion: a hidden checkbox (the script arg) tied to a gr.Accordion, as in the webui."""
import gradio as gr

from modules import gradio_extensons  # noqa: F401  (tooltip= support, like the webui's startup)


class InputAccordion(gr.Checkbox):
    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id") or "input-accordion"
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.accordion = gr.Accordion(**{**kwargs, "label": kwargs.get("label", "Accordion"), "open": value,
                                         "elem_id": self.accordion_id, "elem_classes": ["input-accordion"]})

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + "-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc):
        self.accordion.__exit__(*exc)

    def get_block_name(self):
        return "checkbox"
