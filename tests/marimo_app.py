"""A marimo app with an fw.Explorer on the shipped re-ID net (tests/test_marimo_browser.py)."""

import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo
    import torch

    import famwidget as fw

    torch.set_num_threads(1)
    model = fw.zoo.reid_net()
    people = fw.data.persons(3, 2, seed=5)
    explorer = fw.Explorer(
        model,
        model.preprocess.batch(people.images),
        labels=[f"id {i}" for i in people.labels.tolist()],
        methods=["grad-fam", "score-fam"],
    )
    mo.ui.anywidget(explorer)
    return


if __name__ == "__main__":
    app.run()
