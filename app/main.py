"""loopline control panel. This entry point only routes; each page is a script in views/.

Run with `streamlit run app/main.py` (LOOPLINE_HOME or LOOPLINE_DATABASE_URL name the store).
The pages live in views/, not pages/: a `pages/` folder beside the entry point puts Streamlit
into its older folder-based navigation until some session has called `st.navigation`, so a
deep link into a freshly started server would run a page without this router.
"""

import streamlit as st

from loopline.settings import Settings
from loopline.ui.panel import install

st.set_page_config(page_title="loopline", page_icon=":material/all_inclusive:", layout="wide")
page = st.navigation(
    [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/data.py", title="Data", icon=":material/database:"),
        st.Page("views/runs.py", title="Runs", icon=":material/play_circle:"),
        st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("views/models.py", title="Models", icon=":material/model_training:"),
        st.Page("views/monitoring.py", title="Monitoring", icon=":material/monitoring:"),
        st.Page("views/predictions.py", title="Predictions", icon=":material/manage_search:"),
    ]
)
install(Settings())
page.run()
