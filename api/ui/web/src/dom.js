// DOM helpers: build small elements (text nodes only, never HTML strings) and find the ones a view names.

/** The elements under `root` with a `data-ref`, by name. */
export function refsOf(root) {
  const refs = {};
  for (const element of root.querySelectorAll("[data-ref]")) refs[element.dataset.ref] = element;
  return refs;
}

/** An element with attributes (`class`, `dataset`, properties) and children (nodes or text). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Show a message in an error element, or hide it when the message is empty. */
export function showError(element, message) {
  element.textContent = message || "";
  element.hidden = !message;
}
