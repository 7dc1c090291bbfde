# %% [markdown]
# # scikit-learn in a few cells
# In the style of the scikit-learn "getting started": synthetic data, split, pipeline, cross-validation, metrics.

# %%
import numpy as np
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import LogisticRegression
from sklearn.ensemble import RandomForestClassifier
from sklearn import metrics

X, y = make_classification(n_samples=300, n_features=8, n_informative=4, random_state=0)
X.shape, np.bincount(y)

# %%
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
X_train.shape, X_test.shape

# %%
model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=200))]).fit(X_train, y_train)
model

# %%
predictions = model.predict(X_test)
accuracy = metrics.accuracy_score(y_test, predictions)
round(accuracy, 4)

# %%
print(metrics.classification_report(y_test, predictions, digits=3))

# %%
metrics.confusion_matrix(y_test, predictions)

# %%
proba = model.predict_proba(X_test)[:, 1]
round(metrics.roc_auc_score(y_test, proba), 4)

# %%
scores = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)), X, y, cv=5)
scores.round(4), round(scores.mean(), 4)

# %%
forest = RandomForestClassifier(n_estimators=25, random_state=0)

# %%
# fit() changes `forest` through a method call (README: such changes come back only when named in --out; this
# cell shows whether they do). Tag it `limit=method-call-mutation` only while it differs.
forest.fit(X_train, y_train);

# %%
forest.score(X_test, y_test)

# %% thither-args="--out forest"
# The README's workaround: name the object in --out.
forest.fit(X_train, y_train)

# %%
round(forest.score(X_test, y_test), 4), forest.feature_importances_.argmax()

# %%
clf = model.named_steps["clf"]
clf.coef_.shape, clf.coef_.round(3)

# %%
from sklearn.model_selection import GridSearchCV
search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)),
                      {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=3).fit(X_train, y_train)
search.best_params_, round(search.best_score_, 4)

# %%
from sklearn.cluster import KMeans
km = KMeans(n_clusters=3, n_init=5, random_state=0).fit(X)
np.bincount(km.labels_), round(km.inertia_, 2)
