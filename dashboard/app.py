"""The gpufleet dashboard's entry point (``streamlit run dashboard/app.py``): only a router.

The shared filters are drawn here, around every page, so they survive page switches."""

import streamlit as st

from dashboard import data, filters, navigation

st.set_page_config(page_title="gpufleet", page_icon=":material/memory:", layout="wide")
page = st.navigation({
    section: [st.Page(navigation.HERE / p.path, title=p.title, icon=p.icon, url_path=p.url_path, default=p.default)
              for p in pages]
    for section, pages in navigation.SECTIONS.items()
})
filters.render(data.filter_options(data.store_url()))
page.run()
