// Loads the viewer's WebAssembly. Kept as a static file (not inline) so that the page runs
// under the relay's Content-Security-Policy, which allows only scripts from this origin.
const boot = document.getElementById("securetext-boot");
const status = document.getElementById("boot-status");

function unsupported() {
  if (status) {
    status.innerHTML = "";
    for (const [lang, title, text] of [
      ["en", "Browser not supported", "This browser cannot decrypt messages safely. Please open the link in an up-to-date browser such as Chrome, Safari, Firefox or Edge."],
      ["es", "Navegador no compatible", "Este navegador no puede descifrar mensajes de forma segura. Abra el enlace en un navegador actualizado como Chrome, Safari, Firefox o Edge."],
    ]) {
      const h = document.createElement("h1");
      h.lang = lang;
      h.textContent = title;
      const p = document.createElement("p");
      p.lang = lang;
      p.textContent = text;
      status.append(h, p);
    }
    status.setAttribute("role", "alert");
  }
}

if (typeof WebAssembly !== "object" || !window.crypto || !window.crypto.subtle) {
  unsupported();
} else {
  try {
    const { default: init } = await import(boot.dataset.js);
    await init({ module_or_path: boot.dataset.wasm });
  } catch (error) {
    console.error("viewer failed to start", error);
    unsupported();
  }
}
